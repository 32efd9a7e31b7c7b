package main

import (
	"github.com/vigilhq/vigil/cmd/vigil/stack"
	"github.com/vigilhq/vigil/pkg/ratelimit"
	"github.com/vigilhq/vigil/services/api"
)

// The all-in-one stack lives in package stack so that suites outside this
// module (test/conformance) start the very stack `vigil dev` runs; these
// names keep the commands and tests of package main as they read.
type (
	// StackConfig is stack.Config.
	StackConfig = stack.Config
	// Stack is stack.Stack.
	Stack = stack.Stack
	// NATSSecurity is stack.NATSSecurity.
	NATSSecurity = stack.NATSSecurity
)

// How the embedded NATS server admits clients (see stack.NATSSecurity).
const (
	NATSAuth = stack.NATSAuth
	NATSTLS  = stack.NATSTLS
	NATSOpen = stack.NATSOpen
)

// Deployment secrets kept in the data directory (see package stack).
const (
	redactionKeyFile = stack.RedactionKeyFile
	judgeSealKeyFile = stack.JudgeSealKeyFile
	notifierKeyFile  = stack.NotifierKeyFile
)

var (
	// StartStack is stack.Start.
	StartStack = stack.Start
	// ParseNATSSecurity is stack.ParseNATSSecurity.
	ParseNATSSecurity = stack.ParseNATSSecurity
	// CredsDir is stack.CredsDir.
	CredsDir = stack.CredsDir
	keyFile  = stack.KeyFile
)

// benchAPIConfig is the api configuration of `vigil bench`: the defaults
// without rate limits, which would otherwise measure the limiter.
func benchAPIConfig() api.Config {
	c := api.DefaultConfig()
	c.RateLimits = ratelimit.Limits{}
	return c
}
