module github.com/vigilhq/vigil/deploy

go 1.26.8

require github.com/vigilhq/vigil/pkg v0.0.0

replace github.com/vigilhq/vigil/pkg => ../pkg
