"""Acting on a page: acknowledgements, signed links, the WeCom callback."""
