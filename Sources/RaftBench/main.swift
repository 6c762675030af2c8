print("raftbench: pending")
