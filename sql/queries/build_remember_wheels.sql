-- Remember the names of wheels being published, for ever (see sql/013_wheel_names.sql).
INSERT INTO wheel_names (filename, package, version, python_tag, abi_tag, platform_tag, build_number, sha256)
SELECT w.filename, %(package)s, %(version)s, w.python_tag, w.abi_tag, w.platform_tag, w.build_number, w.sha256
FROM unnest(%(filename)s::text[], %(python_tag)s::text[], %(abi_tag)s::text[], %(platform_tag)s::text[],
            %(build_number)s::integer[], %(sha256)s::text[])
     AS w(filename, python_tag, abi_tag, platform_tag, build_number, sha256)
ON CONFLICT (filename) DO NOTHING;
