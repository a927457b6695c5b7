-- Which of these packages the catalog has derived before (every fold leaves a packages row).
SELECT package FROM packages WHERE package = ANY(%(packages)s::text[])
