// Package drd is the distributed raw disk: a block device served by one node with io_uring
// direct I/O, reached by local clients through shared-memory rings and by remote clients through
// block shipping over the interconnect, with an NBD front-end for standard tools.
package drd
