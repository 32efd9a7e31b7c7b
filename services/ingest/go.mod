module github.com/vigilhq/vigil/services/ingest

go 1.26.8

require github.com/vigilhq/vigil/pkg v0.0.0

replace github.com/vigilhq/vigil/pkg => ../../pkg
