use std::rc::Rc;

use kiln_core::{task, Context, Result};

task! {
    pub UsesRc {
        id: "uses-rc",
        state: Rc<String>,
        run: async |ctx: Context, _payload: ()| -> Result<()> {
            let _ = ctx;
            Ok(())
        }
    }
}

fn main() {}
