"""What the tests share: worlds to build (catalog, builds, index), real servers to start, histories."""
