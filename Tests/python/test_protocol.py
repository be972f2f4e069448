"""Health checking and server reflection, through the official grpcio-health-checking and
grpcio-reflection clients."""

import grpc
import pytest
from google.protobuf import descriptor_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

SERVICES = {
    "recserve.v1.Recommender",
    "recserve.v1.ModelAdmin",
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
}


@pytest.fixture(scope="module")
def channel(server):
    channel = grpc.insecure_channel(server.target)
    yield channel
    channel.close()


def test_health_check(channel):
    health = health_pb2_grpc.HealthStub(channel)
    serving = health_pb2.HealthCheckResponse.SERVING
    assert health.Check(health_pb2.HealthCheckRequest(service=""), timeout=10).status == serving
    assert health.Check(health_pb2.HealthCheckRequest(service="recserve.v1.Recommender"), timeout=10).status == serving
    per_model = health_pb2.HealthCheckRequest(service="recserve.v1.Recommender/movies")
    assert health.Check(per_model, timeout=10).status == serving
    with pytest.raises(grpc.RpcError) as error:
        health.Check(health_pb2.HealthCheckRequest(service="no.such.Service"), timeout=10)
    assert error.value.code() == grpc.StatusCode.NOT_FOUND


def test_health_watch_sends_the_current_status(channel):
    health = health_pb2_grpc.HealthStub(channel)
    stream = health.Watch(health_pb2.HealthCheckRequest(service=""), timeout=10)
    first = next(stream)
    assert first.status == health_pb2.HealthCheckResponse.SERVING
    stream.cancel()


def test_reflection_v1alpha_lists_services_and_resolves_them(channel):
    database = ProtoReflectionDescriptorDatabase(channel)
    assert SERVICES <= set(database.get_services())
    file = database.FindFileContainingSymbol("recserve.v1.Recommender")
    assert file.name == "recserve/v1/recserve.proto"
    methods = {m.name for s in file.service if s.name == "Recommender" for m in s.method}
    assert methods == {"Predict", "Rank", "SimilarItems", "Train", "AppendEvents", "AppendEventStream", "GetUserEvents"}
    rank_request = database.FindFileContainingSymbol("recserve.v1.RankRequest")
    fields = {f.name for m in rank_request.message_type if m.name == "RankRequest" for f in m.field}
    assert {"model", "user_id", "k", "exclude_seen", "min_score"} <= fields


def test_reflection_v1_answers_on_the_same_stream(channel):
    # grpcio-reflection has no v1 client; v1 messages are wire-identical to v1alpha's.
    call = channel.stream_stream(
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
    )
    requests = [
        reflection_pb2.ServerReflectionRequest(list_services=""),
        reflection_pb2.ServerReflectionRequest(file_by_filename="recserve/v1/recserve.proto"),
        reflection_pb2.ServerReflectionRequest(file_containing_symbol="no.such.Symbol"),
    ]
    responses = list(call(iter(requests), timeout=10))
    assert len(responses) == 3
    assert SERVICES <= {s.name for s in responses[0].list_services_response.service}
    proto = descriptor_pb2.FileDescriptorProto.FromString(responses[1].file_descriptor_response.file_descriptor_proto[0])
    assert proto.package == "recserve.v1"
    assert responses[2].error_response.error_code == grpc.StatusCode.NOT_FOUND.value[0]


def test_reflection_stub_directly(channel):
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    responses = list(stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]),
                                               timeout=10))
    assert len(responses) == 1


def test_model_admin_reads_what_serves(channel):
    from recserve.v1 import recserve_pb2 as pb
    from recserve.v1 import recserve_pb2_grpc as rpc

    admin = rpc.ModelAdminStub(channel)
    models = admin.ListModels(pb.ListModelsRequest(), timeout=10).models
    movies = next(m for m in models if m.name == "movies")
    assert movies.serving_version == 1
    assert movies.versions[0].state == pb.AVAILABLE
    assert movies.versions[0].metrics["rmse"] > 0
    status = admin.GetModelStatus(pb.GetModelStatusRequest(name="movies"), timeout=10).status
    assert status.versions[0].size_bytes > 0
    with pytest.raises(grpc.RpcError) as error:
        admin.GetModelStatus(pb.GetModelStatusRequest(name="nope"), timeout=10)
    assert error.value.code() == grpc.StatusCode.NOT_FOUND
