"""Bad requests get a clear status naming the field, and the server keeps serving."""

import grpc
import pytest

from recserve.v1 import recserve_pb2 as pb
from recserve.v1 import recserve_pb2_grpc as rpc


@pytest.fixture(scope="module")
def channel(server):
    channel = grpc.insecure_channel(server.target)
    yield channel
    channel.close()


@pytest.fixture(scope="module")
def stub(channel):
    return rpc.RecommenderStub(channel)


@pytest.fixture(scope="module")
def a_user(dataset):
    return (dataset["models"] / "movies" / "1" / "users.txt").read_text().splitlines()[0]


def expect_error(call, request, code, *words):
    with pytest.raises(grpc.RpcError) as error:
        call(request, timeout=10)
    assert error.value.code() == code, error.value.details()
    for word in words:
        assert word in error.value.details(), error.value.details()


def model():
    return pb.ModelSpec(name="movies")


@pytest.mark.parametrize("k", [0, -1, -2147483648])
def test_rank_k_not_positive(stub, a_user, k):
    expect_error(stub.Rank, pb.RankRequest(model=model(), user_id=a_user, k=k), grpc.StatusCode.INVALID_ARGUMENT, "k")


@pytest.mark.parametrize("k", [10_001, 2_000_000_000, 2147483647])
def test_rank_absurd_k(stub, a_user, k):
    expect_error(stub.Rank, pb.RankRequest(model=model(), user_id=a_user, k=k), grpc.StatusCode.INVALID_ARGUMENT,
                 "k must be at most")


def test_rank_empty_user_id(stub):
    expect_error(stub.Rank, pb.RankRequest(model=model(), k=5), grpc.StatusCode.INVALID_ARGUMENT, "user_id")


def test_rank_unknown_user(stub):
    expect_error(stub.Rank, pb.RankRequest(model=model(), user_id="who-is-this", k=5), grpc.StatusCode.NOT_FOUND,
                 "who-is-this", "recent_items")


def test_rank_unknown_model(stub, a_user):
    expect_error(stub.Rank, pb.RankRequest(model=pb.ModelSpec(name="no-such-model"), user_id=a_user, k=5),
                 grpc.StatusCode.NOT_FOUND, "no-such-model")


def test_rank_missing_model_name(stub, a_user):
    expect_error(stub.Rank, pb.RankRequest(user_id=a_user, k=5), grpc.StatusCode.INVALID_ARGUMENT, "model.name")


@pytest.mark.parametrize("field,value,word", [
    ("diversity", 1.5, "diversity"),
    ("diversity", -0.1, "diversity"),
    ("diversity", float("nan"), "diversity"),
    ("popularity_penalty", -1.0, "popularity_penalty"),
    ("popularity_penalty", float("inf"), "popularity_penalty"),
    ("min_score", float("nan"), "min_score"),
])
def test_rank_bad_options(stub, a_user, field, value, word):
    request = pb.RankRequest(model=model(), user_id=a_user, k=5)
    setattr(request, field, value)
    expect_error(stub.Rank, request, grpc.StatusCode.INVALID_ARGUMENT, word)


def test_rank_negative_version(stub, a_user):
    expect_error(stub.Rank, pb.RankRequest(model=pb.ModelSpec(name="movies", version=-3), user_id=a_user, k=5),
                 grpc.StatusCode.INVALID_ARGUMENT, "model.version")


def test_predict_empty_pairs(stub):
    expect_error(stub.Predict, pb.PredictRequest(model=model()), grpc.StatusCode.INVALID_ARGUMENT, "pairs")


def test_predict_empty_ids_name_the_pair(stub, a_user):
    request = pb.PredictRequest(model=model(), pairs=[pb.UserItem(user_id=a_user, item_id="x"),
                                                      pb.UserItem(user_id=a_user, item_id="")])
    expect_error(stub.Predict, request, grpc.StatusCode.INVALID_ARGUMENT, "pairs[1].item_id")
    request = pb.PredictRequest(model=model(), pairs=[pb.UserItem(user_id="", item_id="x")])
    expect_error(stub.Predict, request, grpc.StatusCode.INVALID_ARGUMENT, "pairs[0].user_id")


def test_predict_unknown_model(stub, a_user):
    request = pb.PredictRequest(model=pb.ModelSpec(name="ghost"), pairs=[pb.UserItem(user_id=a_user, item_id="x")])
    expect_error(stub.Predict, request, grpc.StatusCode.NOT_FOUND, "ghost")


def test_similar_items_bad_fields(stub):
    expect_error(stub.SimilarItems, pb.SimilarItemsRequest(model=model(), item_id="", k=3),
                 grpc.StatusCode.INVALID_ARGUMENT, "item_id")
    expect_error(stub.SimilarItems, pb.SimilarItemsRequest(model=model(), item_id="nope", k=3),
                 grpc.StatusCode.NOT_FOUND, "nope")
    expect_error(stub.SimilarItems, pb.SimilarItemsRequest(model=model(), item_id="nope", k=0),
                 grpc.StatusCode.INVALID_ARGUMENT, "k")


def test_similar_items_exclude_is_capped_like_ranks_lists(stub, dataset):
    item = (dataset["models"] / "movies" / "1" / "items.txt").read_text().splitlines()[0]
    at_cap = pb.SimilarItemsRequest(model=model(), item_id=item, k=3, exclude=[f"x{i}" for i in range(100_000)])
    assert len(stub.SimilarItems(at_cap, timeout=30).items) == 3
    over = pb.SimilarItemsRequest(model=model(), item_id=item, k=3, exclude=[f"x{i}" for i in range(100_001)])
    expect_error(stub.SimilarItems, over, grpc.StatusCode.INVALID_ARGUMENT, "exclude has 100001 entries",
                 "at most 100000")


@pytest.mark.parametrize("body", [b"\xff\xff\xff\xff", b"\x0a\xff\x01", b"\x12\x05abc", b"\x08" + b"\xff" * 11])
@pytest.mark.parametrize("method", ["Predict", "Rank", "SimilarItems"])
def test_malformed_request_body(channel, method, body):
    call = channel.unary_unary(f"/recserve.v1.Recommender/{method}", request_serializer=None,
                               response_deserializer=None)
    with pytest.raises(grpc.RpcError) as error:
        call(body, timeout=10)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "request body is not a valid recserve.v1." in error.value.details()


def test_message_too_large_is_resource_exhausted(stub, a_user):
    huge = pb.RankRequest(model=model(), user_id=a_user, k=5, exclude=["x" * 1000] * 20_000)
    expect_error(stub.Rank, huge, grpc.StatusCode.RESOURCE_EXHAUSTED)


def test_unknown_method_is_unimplemented(channel):
    for path in ["/recserve.v1.Recommender/Nope", "/no.such.Service/Call"]:
        call = channel.unary_unary(path, request_serializer=None, response_deserializer=None)
        with pytest.raises(grpc.RpcError) as error:
            call(b"", timeout=10)
        assert error.value.code() == grpc.StatusCode.UNIMPLEMENTED
        assert path in error.value.details()


def test_server_still_serves_after_all_of_that(server, stub, a_user):
    assert server.alive()
    response = stub.Rank(pb.RankRequest(model=model(), user_id=a_user, k=3), timeout=10)
    assert len(response.items) == 3
