// Package test holds Vigil's cross-package tests: the repository checks that span every package
// and, in later issues, the integration tests that run real vigild processes in the netns
// harness (package test/netns).
package test
