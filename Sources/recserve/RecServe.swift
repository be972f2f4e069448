import ArgumentParser
import RecServeModels

@main
struct RecServe: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "recserve",
    abstract: "Train, evaluate and serve recommendation models over gRPC.",
    subcommands: [
      ServeCommand.self, TrainCommand.self, EvalCommand.self, GenDataCommand.self, LoadCommand.self,
      ModelsCommand.self, FeaturesCommand.self,
    ]
  )

  static func main() {
    // Before anything else: OpenBLAS may need to load again with the kernels this CPU runs.
    BLASKernels.reexecIfGeneric()
    main(nil)
  }
}
