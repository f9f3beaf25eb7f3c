"""Ray Data job graphs and the files a job writes."""
