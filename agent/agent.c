/* placeholder */ typedef int loom_placeholder_agent;
