// Package bpf holds the C sources of Vigil's eBPF programs and the headers they share with Go.
// Nothing here is compiled by the Go toolchain: bpf2go (run by `make generate`) compiles each
// program into the dataplane package, which loads it.
package bpf
