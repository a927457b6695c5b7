-- Every file name ever published for one wheel slot (package, version and tags; build numbers apart),
-- with its bytes' sha256 and whether the catalog lists it now.
SELECT n.filename, n.build_number, n.sha256, w.build_id
FROM wheel_names n
LEFT JOIN wheels w ON w.filename = n.filename
WHERE n.package = %(package)s AND n.version = %(version)s AND n.python_tag = %(python_tag)s
  AND n.abi_tag = %(abi_tag)s AND n.platform_tag = %(platform_tag)s
ORDER BY n.build_number, n.filename;
