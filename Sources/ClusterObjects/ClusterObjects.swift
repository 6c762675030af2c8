// The typed Kubernetes keyspace lands with the ClusterObjects issue.
import RaftKV
