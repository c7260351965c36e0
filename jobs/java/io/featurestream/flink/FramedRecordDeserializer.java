package io.featurestream.flink;

import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;

import org.apache.flink.api.common.typeinfo.PrimitiveArrayTypeInfo;
import org.apache.flink.api.common.typeinfo.TypeInformation;
import org.apache.flink.connector.kafka.source.reader.deserializer.KafkaRecordDeserializationSchema;
import org.apache.flink.util.Collector;
import org.apache.kafka.clients.consumer.ConsumerRecord;

/**
 * Emits each consumed Kafka record as one byte array carrying its metadata:
 * u16 topic length, topic, i32 partition, i64 offset, i64 timestamp, value bytes.
 * The Python twin is udfs/wire/frames.py.
 */
public class FramedRecordDeserializer implements KafkaRecordDeserializationSchema<byte[]> {
    private static final long serialVersionUID = 1L;

    @Override
    public void deserialize(ConsumerRecord<byte[], byte[]> record, Collector<byte[]> out) {
        byte[] topic = record.topic().getBytes(StandardCharsets.UTF_8);
        byte[] value = record.value() == null ? new byte[0] : record.value();
        ByteBuffer frame = ByteBuffer.allocate(2 + topic.length + 4 + 8 + 8 + value.length);
        frame.putShort((short) topic.length).put(topic);
        frame.putInt(record.partition()).putLong(record.offset()).putLong(record.timestamp());
        frame.put(value);
        out.collect(frame.array());
    }

    @Override
    public TypeInformation<byte[]> getProducedType() {
        return PrimitiveArrayTypeInfo.BYTE_PRIMITIVE_ARRAY_TYPE_INFO;
    }
}
