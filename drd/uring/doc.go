// Package uring is the only code in Vigil that touches io_uring: it sets up rings with the raw
// io_uring_setup, io_uring_enter and io_uring_register system calls (golang.org/x/sys/unix, no
// third-party io_uring library), maps the submission and completion queues, prepares reads,
// writes, fixed-buffer reads and writes, fdatasync, discard (punch hole) and no-ops, submits
// them in batches and reaps their completions in batches. It also opens files for O_DIRECT and
// checks alignment, and offers Engine, a small interface with an io_uring implementation and a
// synchronous pread/pwrite one chosen at run time, which the DRD server drives.
//
// # Ordering contract
//
// Ring and Engine are used by one goroutine at a time (with WithSingleIssuer, by one goroutine
// locked to its OS thread, for the ring's whole life). The order is:
//
//  1. Prepare: GetSQE and a Prep method (Ring), or build Requests (Engine). Nothing reaches
//     the kernel yet.
//  2. Submit: Submit or SubmitAndWait hands every prepared SQE to the kernel in one
//     io_uring_enter; Engine.Submit does this for the batch. From here until step 3 the
//     request belongs to the kernel.
//  3. Reap: PeekCQE, ReapCQEs, WaitCQE, WaitCQEs (Ring) or Reap (Engine) returns each
//     request's completion exactly once, in completion order, not submission order. Reaping
//     needs no system call when completions are already in the queue.
//  4. Only then may the caller reuse or free the request's buffer.
//
// # Buffer lifetime
//
// The kernel keeps only the address of a read or write buffer, so between submit and reap the
// buffer must stay referenced (the garbage collector sees no reference in an SQE), must not move,
// and must not be read (reads) or written (writes) by the program. Engine keeps each request's
// buffer referenced until its completion is reaped; with Ring directly that is the caller's job.
// The Go collector does not move heap objects, but memory from AllocAligned (anonymous mmap,
// outside the Go heap, page-aligned) is the safest home for O_DIRECT and registered buffers.
// Registered buffers are referenced by the Ring until UnregisterBuffers or Close.
//
// Close cancels what it can (IORING_OP_ASYNC_CANCEL) and waits for everything in flight to
// complete, with a time limit (WithCloseTimeout). If the limit passes, the buffers that may
// still be written are kept referenced for the life of the process rather than freed, so the
// kernel never writes into memory that Go has reused.
//
// # Signals and back-pressure
//
// Go delivers signals (SIGURG for preemption among them) to any thread; io_uring_enter
// interrupted by one returns EINTR, and every wait here resumes. When the kernel answers a
// submission with EAGAIN or EBUSY, completions are moved out of the completion queue into a
// backlog (returned first by the reapers) and the submission is retried. If more requests are
// in flight than the completion queue holds, the kernel keeps the excess on an overflow list
// (IORING_FEAT_NODROP) and the reapers flush it; completions the kernel had to drop are reported
// with ErrCQOverflow. Engine avoids both by never having more than QueueDepth requests in flight:
// Submit returns ErrQueueFull instead.
package uring
