-- The latest rankings (see dashboard_rankings in migration 020).
SELECT taken_at, rankings FROM dashboard_rankings;
