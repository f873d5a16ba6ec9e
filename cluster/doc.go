// Package cluster distributes the turns of sessions over the replicas of a
// deployment with NATS JetStream, so that each session's turns run in
// order on one replica at a time.
//
// A session's partition is a hash of its key mod P (Partition). A replica
// holds leases on a fair share of the partitions in a JetStream KV bucket
// (Leases: revision-checked, renewed, expiring on the server, fenced on
// the client), and for each partition it holds it adopts the partition's
// sessions in the agent runtime (agent.Runtime.Adopt). An accepted message,
// already durable in the store, is announced by its id alone on the
// subject of its partition (Node.Dispatch); the owner takes it from the
// stream, in order, into its runtime. The store is the truth about the
// work and the stream only rings the bell: an owner that takes a partition
// over looks in the store for the partition's pending work, and sweeps it
// now and then, so that nothing accepted is lost when an announcement is.
//
// The package owns the stream, the buckets and the leases. It never reads
// or sends message bodies over NATS, and it never decides what a turn
// does: that is the runtime's.
package cluster
