"""What crosses Kafka and the Java/Python boundary: record frames and dead letters."""
