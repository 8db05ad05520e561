// Package control is Vigil's control layer: membership and quorum over the raft-replicated
// cluster database, service groups with their resources, dependencies and agents, failover
// decisions, and the admin API that the vigil CLI talks to.
package control
