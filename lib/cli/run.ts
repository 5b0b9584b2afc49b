/** Runs the command line from source (`node --import tsx lib/cli/run.ts …`); the package's bin shim calls main() from dist. */
import { main } from './main';

void main(process.argv.slice(2));
