package io.featurestream.flink;

import java.nio.ByteBuffer;
import java.time.Duration;

import org.apache.flink.api.common.eventtime.SerializableTimestampAssigner;
import org.apache.flink.api.common.eventtime.WatermarkStrategy;
import org.apache.flink.api.common.functions.MapFunction;
import org.apache.flink.api.common.typeinfo.PrimitiveArrayTypeInfo;
import org.apache.flink.api.common.typeinfo.Types;
import org.apache.flink.api.java.functions.KeySelector;
import org.apache.flink.api.java.typeutils.RowTypeInfo;
import org.apache.flink.streaming.api.datastream.DataStream;
import org.apache.flink.streaming.api.datastream.KeyedStream;
import org.apache.flink.types.Row;

/**
 * The feature job's subtask records, read in Java: the record's event time for the watermark and
 * its routing key for the key-by, so that neither costs a Python operator.
 *
 * <p>A subtask record is (big-endian) i32 routing key (the shard key of its first group: all of
 * its shards belong to the keyed subtask that key's key group goes to), i64 event time, then the
 * (shard key, events) groups (a Python pickle). The Python twin is udfs/features/routing.py.
 */
public final class ShardRecords {
    /** What PyFlink's keyed Python operator takes: Row(key, value). */
    public static final RowTypeInfo KEYED_TYPE =
            new RowTypeInfo(Types.INT, PrimitiveArrayTypeInfo.BYTE_PRIMITIVE_ARRAY_TYPE_INFO);
    /** The key PyFlink's keyed Python operator keeps its state and timers under: Row(key). */
    public static final RowTypeInfo KEY_TYPE = new RowTypeInfo(Types.INT);

    private ShardRecords() {}

    /**
     * Subtask records with event time (bounded out-of-orderness, idleness) keyed by routing key,
     * in the form PyFlink's keyed Python operator expects. Row.of(key) decides the key group, as
     * {@link ShardKeys} assumes.
     */
    public static KeyedStream<Row, Row> keyByShard(
            DataStream<byte[]> records, long maxOutOfOrdernessMs, long idlenessMs) {
        WatermarkStrategy<byte[]> watermarks = WatermarkStrategy
                .<byte[]>forBoundedOutOfOrderness(Duration.ofMillis(maxOutOfOrdernessMs))
                .withIdleness(Duration.ofMillis(idlenessMs))
                .withTimestampAssigner(new NewestEventTime());
        return records.assignTimestampsAndWatermarks(watermarks).name("event time")
                .map(new WithShardKey(), KEYED_TYPE).name("key by shard")
                .keyBy(new ShardKey(), KEY_TYPE);
    }

    public static int shardKey(byte[] record) {
        return ByteBuffer.wrap(record).getInt(0);
    }

    public static long newestEventTime(byte[] record) {
        return ByteBuffer.wrap(record).getLong(4);
    }

    /** A record's time is its newest event's: the watermark follows event time. */
    public static final class NewestEventTime implements SerializableTimestampAssigner<byte[]> {
        private static final long serialVersionUID = 1L;

        @Override
        public long extractTimestamp(byte[] record, long recordTimestamp) {
            return newestEventTime(record);
        }
    }

    /** Row(shard key, record). */
    public static final class WithShardKey implements MapFunction<byte[], Row> {
        private static final long serialVersionUID = 1L;

        @Override
        public Row map(byte[] record) {
            return Row.of(shardKey(record), record);
        }
    }

    /** Row(shard key) of Row(shard key, record). */
    public static final class ShardKey implements KeySelector<Row, Row> {
        private static final long serialVersionUID = 1L;

        @Override
        public Row getKey(Row keyed) {
            return Row.of(keyed.getField(0));
        }
    }
}
