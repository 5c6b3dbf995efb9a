"""What people read: run-comparison reports (`report`) built from finished runs, ours
and LeRobot's (`runs`), and a quick look at one dataset episode (`preview`)."""
