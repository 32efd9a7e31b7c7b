// Package conformance checks Vigil against the three API documents it
// replaces (Kaplaix's HTTP API, Kaizen's API reference and KLA's Control
// Plane API): every example and every documented status code, as real
// HTTP requests against the in-process stack `vigil dev` runs (embedded
// NATS, the real ClickHouse through pkg/chtest).
//
// The suite is data: one scenario table per document (kaplaix_test.go,
// kaizen_test.go, kla_test.go), each case citing the section it comes
// from, with the request, the documented status and the documented
// response fields that must be present with the right JSON types. Where
// Vigil departs from a document on purpose the case says so and why;
// docs/conformance.md lists those deviations and how to run the suite.
package conformance
