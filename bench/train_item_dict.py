"""Train the zstd dictionary statecrawl compresses items with (``statecrawl/frontier/data/items-1.zdict``).

Items are built the way the ``site`` spider builds them (``fill_page``, Markdown
and links) from the first 500 pages of the WCXB dev split, shuffled with seed 1,
so the scrapinghub articles ``bench/redis_memory.py`` measures with are not
trained on. A new dictionary must get a new id (the file name's number): frames
name the dictionary they were made with, and old items must still open.

    .venv/bin/python bench/train_item_dict.py --out statecrawl/frontier/data/items-2.zdict --dict-id 2
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
from pathlib import Path

import zstandard
from itemadapter import ItemAdapter
from scrapy import Request
from scrapy.http import HtmlResponse
from scrapy.linkextractors import LinkExtractor

from statecrawl.output.items import Page
from statecrawl.spiders.site import fill_page, response_fields

DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "benchdata" / "wcxb-dev"


def item_json(path: Path) -> bytes | None:
    url = f"https://example.org/{path.name.split('.')[0]}"
    response = HtmlResponse(url=url, request=Request(url), body=gzip.open(path).read(),
                            headers={"Content-Type": "text/html; charset=utf-8"})
    page = Page(url=url, crawl_id="train", fetched_at="2026-12-02T16:00:00+00:00")
    response_fields(page, response)
    try:
        fill_page(page, response, formats=["markdown"], images="alt",
                  link_extractor=LinkExtractor())
    except Exception:  # noqa: BLE001 - a page the extractor refuses is left out
        return None
    data = {k: v for k, v in ItemAdapter(page).asdict().items() if v is not None}
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--pages", type=int, default=500)
    parser.add_argument("--size", type=int, default=112640)
    parser.add_argument("--dict-id", type=int, default=1)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    paths = sorted((args.data / "dev" / "html").glob("*.html.gz"))
    random.Random(1).shuffle(paths)
    samples = [s for s in map(item_json, paths[: args.pages]) if s]
    trained = zstandard.train_dictionary(args.size, samples, dict_id=args.dict_id)
    args.out.write_bytes(trained.as_bytes())
    print(f"{args.out}: {len(trained.as_bytes())} bytes, id {trained.dict_id()}, "
          f"from {len(samples)} items")


if __name__ == "__main__":
    main()
