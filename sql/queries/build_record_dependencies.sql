-- What the wheels of one build need at run time: apt packages, or libraries no package owns.
INSERT INTO wheel_dependencies (filename, tool, dependency)
SELECT * FROM unnest(%(filename)s::text[], %(tool)s::text[], %(dependency)s::text[])
ON CONFLICT DO NOTHING;
