import ArgumentParser

@main
struct RecServe: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "recserve",
    abstract: "Train, evaluate and serve recommendation models over gRPC.",
    subcommands: [
      ServeCommand.self, TrainCommand.self, EvalCommand.self, GenDataCommand.self, LoadCommand.self,
      ModelsCommand.self,
    ]
  )
}
