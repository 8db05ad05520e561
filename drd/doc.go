// Package drd is the client of the distributed raw disk: a block device served by one node
// with io_uring direct I/O (drd/server), reached from the serving node through shared-memory
// rings (drd/shm) and from any other node by block shipping over a message stream (drd/wire).
// Open picks the path by itself: the local one when the serving node's unix socket answers for
// the device, else the remote one.
//
// # Requests
//
// A Device offers ReadAt, WriteAt, Flush and Discard, and an asynchronous API: Go starts a Call
// and its Done channel receives it when it completes; up to Options.QueueDepth calls are in
// flight, and Go blocks while that many are. Offsets and lengths are whole 4096-byte blocks;
// ReadAt and WriteAt split what is larger than the server's largest request.
//
// On the local path every call in flight owns one data slot of the shared region, and the
// server's io_uring reads and writes the slot itself (it is registered as a fixed buffer in the
// server), so the data crosses no socket and no kernel copy. A call from NewCall keeps its slot
// for life and its Buf is the slot: the disk reads into and writes from the caller's memory.
// Other calls' data is copied into the slot when a write starts and out of it when a read
// completes.
//
// # Epochs and re-sending
//
// Every incarnation of a server has an epoch, learned at connection and carried by every
// request. When the connection breaks (the server process died or was restarted, the device
// moved to another node) or the server answers StatusStaleEpoch, the Device keeps every call
// still in flight, reconnects (local path first, then remote, retrying for
// Options.ReconnectTimeout), learns the new epoch and re-sends those calls, oldest first, before
// any later one can overtake them on the new connection; a server with an older epoch than the
// last one it spoke to is refused (an earlier incarnation that has not stopped yet). Callers
// see nothing but latency.
// Reads, writes, flushes and discards of whole blocks are idempotent, so a request that did
// reach the disk before the break and runs again does no harm; an application sees a write as
// done only when its call completes, and it does not complete before the server answered it
// after the write reached the disk. Writes are durable against a crash of the server process
// at once (O_DIRECT) and against a power loss after a completed Flush. If no server comes back
// within ReconnectTimeout, every call in flight fails and the Device is unusable.
package drd
