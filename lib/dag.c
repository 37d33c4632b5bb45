/* placeholder */ int loom_dag_placeholder;
