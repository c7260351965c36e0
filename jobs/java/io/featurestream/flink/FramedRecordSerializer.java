package io.featurestream.flink;

import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;

import org.apache.flink.connector.kafka.sink.KafkaRecordSerializationSchema;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.header.internals.RecordHeaders;

/**
 * Produces a record described by a frame: u16 topic length, topic, i32 key length (-1 = null),
 * key, u16 header count, (u16 name length, name, i32 value length, value)*, value bytes.
 * The Python twin is udfs/wire/frames.py.
 */
public class FramedRecordSerializer implements KafkaRecordSerializationSchema<byte[]> {
    private static final long serialVersionUID = 1L;

    @Override
    public ProducerRecord<byte[], byte[]> serialize(
            byte[] element, KafkaSinkContext context, Long timestamp) {
        ByteBuffer in = ByteBuffer.wrap(element);
        String topic = new String(take(in, Short.toUnsignedInt(in.getShort())), StandardCharsets.UTF_8);
        int keyLength = in.getInt();
        byte[] key = keyLength < 0 ? null : take(in, keyLength);
        RecordHeaders headers = new RecordHeaders();
        int count = Short.toUnsignedInt(in.getShort());
        for (int i = 0; i < count; i++) {
            String name = new String(take(in, Short.toUnsignedInt(in.getShort())), StandardCharsets.UTF_8);
            headers.add(name, take(in, in.getInt()));
        }
        byte[] value = take(in, in.remaining());
        return new ProducerRecord<>(topic, null, timestamp, key, value, headers);
    }

    private static byte[] take(ByteBuffer in, int length) {
        byte[] bytes = new byte[length];
        in.get(bytes);
        return bytes;
    }
}
