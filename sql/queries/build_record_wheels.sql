-- The wheels of one successful build, in one statement: what the index host read and tested itself.
-- Each wheel's Requires-Dist arrives as a JSON array (arrays of arrays must be rectangular in PostgreSQL).
INSERT INTO wheels (filename, build_id, package, version, size, sha256, python_tag, abi_tag,
                    platform_tag, requires_python, metadata_sha256, requires_dist, glibc_floor, tested_on,
                    test_result, test_detail)
SELECT w.filename, %(build_id)s, %(package)s, %(version)s, w.size, w.sha256, w.python_tag, w.abi_tag,
       w.platform_tag, w.requires_python, w.metadata_sha256,
       ARRAY(SELECT jsonb_array_elements_text(w.requires_dist)), w.glibc_floor, w.tested_on, w.test_result,
       w.test_detail
FROM unnest(%(filename)s::text[], %(size)s::bigint[], %(sha256)s::text[], %(python_tag)s::text[],
            %(abi_tag)s::text[], %(platform_tag)s::text[], %(requires_python)s::text[],
            %(metadata_sha256)s::text[], %(requires_dist)s::jsonb[], %(glibc_floor)s::text[],
            %(tested_on)s::text[], %(test_result)s::text[], %(test_detail)s::text[])
     AS w(filename, size, sha256, python_tag, abi_tag, platform_tag, requires_python, metadata_sha256,
          requires_dist, glibc_floor, tested_on, test_result, test_detail);
