-- Add a batch of download counts (one row per day, file, Python and installer), in one statement.
INSERT INTO downloads AS d (day, filename, package, version, abi_tag, platform_tag, python, installer,
                            installer_version, count)
SELECT * FROM unnest(%(day)s::date[], %(filename)s::text[], %(package)s::text[], %(version)s::text[],
                     %(abi)s::text[], %(platform)s::text[], %(python)s::text[], %(installer)s::text[],
                     %(installer_version)s::text[], %(count)s::bigint[])
ON CONFLICT (day, filename, python, installer, installer_version)
DO UPDATE SET count = d.count + EXCLUDED.count;
