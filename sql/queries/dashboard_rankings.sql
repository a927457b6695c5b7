-- The latest rankings (see dashboard_rankings in migration 020).
SELECT taken_at, missing, top_downloads, wanted, downloads_per_day FROM dashboard_rankings;
