// Package version holds the version stamped into every ferry binary.
package version

// Version is set at build time with
// -ldflags "-X github.com/ferry-cd/ferry/pkg/version.Version=YYYY.MM.DD-N".
// A binary built without it reports "dev".
var Version = "dev"
