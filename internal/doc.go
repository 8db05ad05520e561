// Package internal holds the few small pieces shared across Vigil's packages that belong to no
// single component; each lives in its own subpackage named for its job.
package internal
