"""What every evaluation shares: the BEIR reader, the retrieval metrics, the one percentile
function and the report writer."""
