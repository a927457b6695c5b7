-- Per-package build settings an operator keeps for packages that need more than the defaults.
--
-- apt_packages   Debian packages the build needs beyond its target's image: the build runs in a
--                derived image (the target's recipe plus these, named by its recipe hash like any
--                image, built on first use) and its install test runs there too
-- timeout        the build's wall-clock limit instead of the builder's default (3 h, piwheels' own);
--                numpy-class builds under emulation take longer
-- environment    variables set for the build (e.g. {"NPY_NUM_BUILD_JOBS": "1"}); never the sandbox's
--                own (PATH, HOME, proxies, PIP_*: builds/build_settings.py refuses them)
-- changed_by     who set them (the CLI's user, or the dashboard's), and when
--
-- Settings are the operator's, like skip_reason: they stay with the canonical name whatever PyPI does
-- (no foreign key: the first replay loads packages without their keys). Builds claimed from then on
-- carry them to the worker in their request.
CREATE TABLE build_settings (
    package      text COLLATE "C" PRIMARY KEY,          -- canonical name
    apt_packages text[] NOT NULL DEFAULT '{}',
    timeout      interval CHECK (timeout > interval '0'),
    environment  jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(environment) = 'object'),
    changed_by   text NOT NULL,
    changed_at   timestamptz NOT NULL DEFAULT now()
);
