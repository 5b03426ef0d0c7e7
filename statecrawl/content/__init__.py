"""Content: what a page says, with no I/O and no Scrapy.

* ``markdown`` (``to_markdown``, ``main_content_html``), with the tree
  rewrites that make its output fit for a language model: ``_code`` (code
  languages, line-number gutters), ``_links`` (empty and dead links,
  images by alt text), ``_tables`` (span-filled grids, layout tables);
* ``maincontent`` (main-content detection) over ``_pagetext`` (text
  statistics of the lxml tree) and ``_cleaning`` (code, media, too-deep
  nesting, hidden elements);
* ``extract`` (page metadata: title, description, Open Graph, JSON-LD...).

Imports nothing from statecrawl but exceptions; everything else may use it.
"""
