// Package conformance plays the SDK conformance scenarios (scenarios.json)
// against the in-process Vigil stack: its test harness starts the stack,
// prepares a tenant per SDK, puts a fault-injecting proxy in front of it
// and launches each SDK's runner as a subprocess. See README.md.
package conformance
