// Package heartbeat owns Vigil's liveness protocol in user space: the heartbeat frame format, the
// sender that puts frames on every private link, and the tick-driven failure detector that turns
// what the kernel (or the raw-socket fallback) saw into link and peer transitions.
package heartbeat
