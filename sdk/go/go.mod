module github.com/vigilhq/vigil/sdk/go

go 1.26.8
