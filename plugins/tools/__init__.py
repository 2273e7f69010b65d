"""Built-in tools (each a `@tool` function): calculator, clock, files (read_file, write_file, list_dir,
delete_file), sql_query, memory_search."""
