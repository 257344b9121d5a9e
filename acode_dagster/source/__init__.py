"""Reading the ACODE source: a partition's window, in bounded chunks."""
