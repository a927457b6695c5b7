-- Where a wheel loads, as the index host found out itself before publishing it.
--
-- glibc_floor   the newest GLIBC_x.y symbol version its compiled code needs ('2.36'), read from its
--               ELF files on the index host (builds/wheel_abi.py); NULL: no compiled code, or none
--               that needs a versioned glibc symbol. A wheel that meets a manylinux policy carries it
--               in its platform tag (manylinux_2_X_<arch>), which pip checks against the running glibc.
-- tested_on     the system its install test ran on, in words: 'bookworm armhf' (builds/install_test.py)
-- test_result   'imports'            every top-level module imported in a fresh venv of that image
--               'needs-a-pi'         it refuses to load off a Raspberry Pi, as data/needs-a-pi.tsv
--                                    says that package does (RPi.GPIO): built, not importable here
--               'needs-dependencies' it loaded up to a Python dependency it names, which the test
--                                    does not install (it runs with no network)
--               NULL                 not tested (a pure wheel, or a build recorded before this)
-- test_detail   what the import said, in one line, for the last two
ALTER TABLE wheels ADD COLUMN glibc_floor text;
ALTER TABLE wheels ADD COLUMN tested_on text;
ALTER TABLE wheels ADD COLUMN test_result text
    CHECK (test_result IN ('imports', 'needs-a-pi', 'needs-dependencies'));
ALTER TABLE wheels ADD COLUMN test_detail text;
