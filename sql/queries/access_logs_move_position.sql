-- Where a source's log has been read up to: the file (device, inode) and the offset after its last
-- counted line. Written in the transaction that adds those lines' counts.
INSERT INTO access_log_positions AS p (source, path, device, inode, "offset", lines)
VALUES (%(source)s, %(path)s, %(device)s, %(inode)s, %(offset)s, %(lines)s)
ON CONFLICT (source) DO UPDATE SET
    path = EXCLUDED.path, device = EXCLUDED.device, inode = EXCLUDED.inode, "offset" = EXCLUDED."offset",
    lines = p.lines + EXCLUDED.lines, updated_at = now();
