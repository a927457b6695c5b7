"""The catalog schema (numbered migrations) and its named queries, shipped as package data."""
