"""Following PyPI: the only room that talks to PyPI (or anything speaking its protocol).

Owns the XML-RPC changelog methods and the JSON API, their rate limits and retries. It hands out plain
rows and documents; what they mean is the catalog's business, and it never writes to the catalog itself.
"""
