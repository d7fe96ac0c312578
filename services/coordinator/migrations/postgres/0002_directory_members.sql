-- The members of each directory applied, so a coordinator that restarts on a file removing most of
-- them holds it back as a running one would (comma-separated organisation ids; NULL before 0002).
ALTER TABLE directory_versions ADD COLUMN members TEXT;
