ALTER TABLE decisions ADD COLUMN observed_source String DEFAULT ''
