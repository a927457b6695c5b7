-- Every wheel file name ever published, with its bytes' sha256: a URL never changes its bytes.
--
-- pip, a CDN and a pull-through cache may keep a wheel forever under its URL (nginx tells them it never
-- changes). A rebuild (an operator's `wheelwright rebuild`, a re-queued release) can make different
-- bytes under the same file name; publishing them there would make pip fail on a hash mismatch. So the
-- index host remembers each name it published, and never forgets it (not when the build, the release or
-- even the project is deleted: PyPI never reuses a file name either). A rebuild whose wheel equals a
-- remembered one (same slot: package, version and tags; same sha256) takes that name again; one that
-- differs gets the next free PEP 427 build number (foo-1.0-1-cp311-cp311-linux_armv7l.whl).

CREATE TABLE wheel_names (
    filename     text COLLATE "C" PRIMARY KEY,
    package      text COLLATE "C" NOT NULL,
    version      text COLLATE "C" NOT NULL,
    python_tag   text NOT NULL,
    abi_tag      text NOT NULL,
    platform_tag text NOT NULL,
    build_number integer NOT NULL DEFAULT 0,   -- the file name's PEP 427 build number; 0 without one
    sha256       text NOT NULL,
    published_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX wheel_names_slot ON wheel_names (package, version, python_tag, abi_tag, platform_tag);

INSERT INTO wheel_names (filename, package, version, python_tag, abi_tag, platform_tag, build_number,
                         sha256, published_at)
SELECT filename, package, version, python_tag, abi_tag, platform_tag,
       CASE WHEN array_length(string_to_array(left(filename, -4), '-'), 1) = 6
            THEN coalesce(substring(split_part(filename, '-', 3) FROM '^[0-9]{1,9}')::integer, 0)
            ELSE 0 END,
       sha256, uploaded
FROM wheels
ON CONFLICT DO NOTHING;
