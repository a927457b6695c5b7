-- Which of these packages the catalog has derived before (every fold leaves a packages row). They come
-- as one string, separated by spaces, which no canonical name has: psycopg would dump a list of PyPI's
-- 50,000 first packages element by element, in a fifth of a second.
SELECT package FROM packages WHERE package = ANY(string_to_array(%(packages)s, ' '))
