#[derive(clap::Args)] pub struct DemoArgs {}
pub fn run(_: &DemoArgs) -> anyhow::Result<()> { Ok(()) }
