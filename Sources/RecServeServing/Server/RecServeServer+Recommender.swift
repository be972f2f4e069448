import Foundation
import RecServeModels
import RecServeProto
import RecServeRPC

extension RecServeServer {
  /// The Recommender service: Predict, Rank and SimilarItems (RecommenderService, with Rank's
  /// batching) and Train (TrainService).
  func registerRecommender(on registrar: ServiceRegistrar) {
    let recommender = self.recommender
    let inline = recommender.limits.inlineWork
    registrar.planned("Predict", inline: inline) {
      (request: Recserve_V1_PredictRequest, context) in
      try recommender.planPredict(request) { context.count(in: $0.traffic.counters) }
    }
    registrar.register(
      "Rank", Recserve_V1_RankRequest.self, Recserve_V1_RankResponse.self, rankHandler())
    registrar.planned("SimilarItems", inline: inline) {
      (request: Recserve_V1_SimilarItemsRequest, context) in
      try recommender.planSimilarItems(request) { context.count(in: $0.traffic.counters) }
    }
    events.register(on: registrar)
    let trainer = self.trainer
    let hub = registry.hub
    registrar.serverStreaming("Train", Recserve_V1_TrainProgress.self) {
      (request: Recserve_V1_TrainRequest, _, writer) in
      // Events name the model and the kind, never the data path (it may lie outside the data
      // root) nor the error's words (they may quote it): those go to the client only.
      let fields = ["model": request.name, "kind": request.kind.isEmpty ? "mf" : request.kind]
      hub.emit(
        ServerEvent(
          "training '\(request.name)' started",
          fields: fields.merging(["event": "training_started", "tune": "\(request.tune)"]) { $1 })
      )
      let start = DispatchTime.now().uptimeNanoseconds
      do {
        try trainer.train(request, writer: writer)
      } catch {
        let code = (error as? any StatusReporting)?.statusCode ?? .internal
        hub.emit(
          ServerEvent(
            "training '\(request.name)' ended with \(code)", warning: true,
            fields: fields.merging(["event": "training_failed", "code": "\(code)"]) { $1 }))
        throw error
      }
      let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
      hub.emit(
        ServerEvent(
          "training '\(request.name)' finished in \(String(format: "%.2f", seconds)) s",
          fields: fields.merging([
            "event": "training_finished", "seconds": String(format: "%.2f", seconds),
          ]) { $1 }))
    }
  }

  /// Rank: priced on the receiving thread like every planned method, but a scan of a large
  /// catalog with little else to do is served alone on every core, or joins the batcher when
  /// other Ranks are in flight.
  private func rankHandler() -> MethodHandler {
    let recommender = self.recommender
    let inline = recommender.limits.inlineWork
    let batcher = self.batcher
    let rankers = self.rankers
    let batchFrom = configuration.batchMinWork
    return .unaryDeferrable { context, bytes in
      let request = recommender.withEvents(
        try ServiceRegistrar.decode(Recserve_V1_RankRequest.self, bytes))
      // The version's traffic counts the call from the moment it is chosen: a request it
      // refuses (e.g. SEARCH_IVF on a version without an index) is one of its errors.
      let planned = try recommender.planRank(request) { context.count(in: $0.traffic.counters) }
      // A scan of a large catalog, with little else to do: alone it is served here at once,
      // split over every core; while other Ranks are in flight it joins the batcher, which
      // scans once for many (with batching off, it runs like any request).
      if let key = planned.batchKey, planned.shared >= batchFrom,
        planned.work - planned.shared <= inline
      {
        if rankers.enterAlone() {
          let run = planned.runAlone ?? planned.run
          if planned.work <= inline {
            defer { rankers.leave() }
            return .response(try run({ try context.checkDeadline() }).serializedBytes())
          }
          // A catalog too large to scan on a request thread (calls queued behind it would
          // wait): the work pool, still alone and on every core.
          let guardian = LeaveOnce(rankers)
          return .deferred { context in
            defer { guardian.leave() }
            return try run({ try context.checkDeadline() }).serializedBytes()
          }
        }
        if let batcher {
          return .handedOff { responder in
            let job = RankBatcher.Job(
              request: request, served: key.served, knownUser: key.knownUser, k: key.k,
              half: key.half, responder: responder)
            if !batcher.submit(job) {
              responder.fail(
                RPCError(
                  .resourceExhausted,
                  "\(batcher.maxQueued) Rank requests are waiting already; retry later"))
            }
          }
        }
        if planned.work <= inline {
          rankers.enter()
          defer { rankers.leave() }
          return .response(try planned.run({ try context.checkDeadline() }).serializedBytes())
        }
      }
      if planned.work <= inline {
        return .response(try planned.run({ try context.checkDeadline() }).serializedBytes())
      }
      return .deferred { context in
        try planned.run({ try context.checkDeadline() }).serializedBytes()
      }
    }
  }
}

extension AdminService {
  /// The ModelAdmin service. The ones that wait for the registry's loader (which may load and
  /// verify a version for seconds) must not hold a completion-queue thread and the calls queued
  /// on it.
  func register(on registrar: ServiceRegistrar) {
    registrar.unary("ListModels") { (request: Recserve_V1_ListModelsRequest, _) in
      try self.listModels(request)
    }
    registrar.unary("GetModelStatus") { (request: Recserve_V1_GetModelStatusRequest, _) in
      try self.getModelStatus(request)
    }
    registrar.waitingUnary("SetLabel") { (request: Recserve_V1_SetLabelRequest, context) in
      try self.setLabel(request, context: context)
    }
    registrar.waitingUnary("AddItems") { (request: Recserve_V1_AddItemsRequest, context) in
      try self.addItems(request, context: context)
    }
    registrar.waitingUnary("UnloadVersion") {
      (request: Recserve_V1_UnloadVersionRequest, context) in
      try self.unloadVersion(request, context: context)
    }
    registrar.waitingUnary("ReloadRepository") {
      (request: Recserve_V1_ReloadRepositoryRequest, context) in
      try self.reloadRepository(request, context: context)
    }
  }
}

extension HealthService {
  /// grpc.health.v1.Health.
  func register(on registrar: ServiceRegistrar) {
    registrar.unary("Check") { (request: Grpc_Health_V1_HealthCheckRequest, _) in
      try self.check(request)
    }
    registrar.serverStreaming("Watch", Grpc_Health_V1_HealthCheckResponse.self) {
      (request: Grpc_Health_V1_HealthCheckRequest, _, writer) in
      try self.watch(request, writer: writer)
    }
  }
}

extension ReflectionResponder {
  /// Server reflection, v1 or v1alpha (the registrar's service): one answer per request.
  func register(on registrar: ServiceRegistrar) {
    registrar.register(
      "ServerReflectionInfo", request: registrar.service + "Request",
      response: registrar.service + "Response", clientStreaming: true, serverStreaming: true,
      .bidiStreaming { _, bytes in
        do {
          return [Array(try self.respond(toSerializedRequest: Data(bytes)))]
        } catch {
          throw RPCError.invalidArgument(
            "request body is not a valid ServerReflectionRequest: \(error)")
        }
      })
  }
}
